"""Templates under `check`: every template renders for every awkward sample, and a reply names a unit
whenever its template talks about one."""

from __future__ import annotations

import re
from email.utils import formataddr
from pathlib import Path

import pytest

from emailrouter.config.loader import Config, load_config
from emailrouter.core.errors import ConfigError
from emailrouter.core.model import Reply, RouterIdentity, Unit
from emailrouter.core.pipeline import route
from emailrouter.core.templates import NO_UNIT, greeting_name, reply_context, sample_contexts
from emailrouter.ops.cli import main
from tests.conftest import NOW, eml


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_samples_cover_the_awkward_cases(config: Config) -> None:
    """The sample contexts hold every awkward name, empty and long subjects, no address, every unit and segment."""
    units = list(config.units.values())
    segments = sorted(config.segmentation.segments)
    for lang in ("id", "en"):
        samples = sample_contexts(config.router, units, segments, lang)
        contexts = [s.context for s in samples]
        names = {c["customer"]["name"] for c in contexts}
        # the emoji name reaches templates as a greeting can use it (issue 12: no emoji copied into a greeting)
        assert {"", "budi.santoso@gmail.com", "Sari", "王小明", "محمد عبد الله"} <= names
        subjects = {c["original_subject"] for c in contexts}
        assert "" in subjects and max(len(s) for s in subjects) > 200
        assert "" in {c["customer"]["address"] for c in contexts}
        assert {c["unit"]["key"] for c in contexts} == set(config.units)
        assert {c["segment"] for c in contexts} == set(segments)
        assert {(c["unit"]["key"], c["segment"]) for c in contexts} == {(u, s) for u in config.units for s in segments}
        assert {c["language"] for c in contexts} == {lang}
        assert samples[0].description.startswith("the ordinary sample")


def test_first_word_of_an_empty_name_fails_check_naming_file_line_and_sample(config_copy: Path) -> None:
    """`customer.name.split()[0]` breaks on a sender with no display name: check says where and for which sample."""
    tpl = config_copy.parent / "templates" / "education.en.txt"
    _edit(tpl, '{{ customer.name or "Customer" }}', "{{ customer.name.split()[0] }}")
    line = _line_of(tpl, "customer.name.split()")
    problems = _problems(config_copy)
    expected = f"{tpl}:{line}: education: does not render for a sender with no display name: "
    assert any(p.startswith(expected) for p in problems), problems
    assert not any("education.id.txt" in p for p in problems), problems


def test_undefined_variable_in_a_branch_only_some_segment_takes_fails_check(config_copy: Path) -> None:
    """An undefined variable behind `{% if segment == 'DGS' %}` is found, with its line and the segment that took it."""
    tpl = config_copy.parent / "templates" / "ticket_ack.id.txt"
    _edit(tpl, "Hormat kami,", '{% if segment == "DGS" %}\nSalam, {{ instansi }}\n{% endif %}\nHormat kami,')
    line = _line_of(tpl, "{{ instansi }}")
    problems = _problems(config_copy)
    assert any(
        p.startswith(f"{tpl}:{line}: ticket_ack: does not render for segment DGS: 'instansi' is undefined")
        for p in problems
    ), problems


def test_undefined_variable_for_one_unit_names_the_unit(config_copy: Path) -> None:
    """A branch that only one unit takes is rendered too, and the unit is named."""
    tpl = config_copy.parent / "templates" / "education.id.txt"
    _edit(tpl, "Hormat kami,", '{% if unit.key == "coordination" %}{{ koordinator }}{% endif %}\nHormat kami,')
    problems = _problems(config_copy)
    assert any(
        "education.id.txt:" in p and "does not render for unit 'coordination': 'koordinator' is undefined" in p
        for p in problems
    ), problems


def test_first_character_of_an_empty_subject_fails_check(config_copy: Path) -> None:
    """Indexing the subject breaks on an empty one; check names that sample."""
    tpl = config_copy.parent / "templates" / "education.id.txt"
    _edit(tpl, "Subject: Re: {{ original_subject }}", "Subject: Re: {{ original_subject[0] }}{{ original_subject }}")
    problems = _problems(config_copy)
    assert any(re.search(r"education\.id\.txt:1: education: does not render for an empty subject", p) for p in problems)


def test_reply_without_unit_is_an_error_where_the_template_uses_the_unit(config_copy: Path) -> None:
    """`reply: education` with no `unit:` is refused at the row, naming the template line that uses the unit."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      - reply: education\n        unit: agent_desk\n", "      - reply: education\n")
    start = _line_of(rules, "id: 1.2.6-information-to-agent-desk")
    line = next(n for n, t in enumerate(rules.read_text().splitlines(), 1) if n > start and "reply: education" in t)
    problems = _problems(config_copy)
    tpl = config_copy.parent / "templates" / "education.id.txt"
    uses = _line_of(tpl, "{{ unit.name }}")
    expected = (
        f"{rules}:{line}: rows[2].actions[1].reply: template 'education' tells the customer about a unit "
        f"({tpl}:{uses}) but this reply names none: add 'unit: UNIT' under it"
    )
    assert any(p.startswith(expected) for p in problems), problems


def test_reply_without_unit_is_fine_when_the_template_guards_it(config_copy: Path) -> None:
    """A template that uses the unit only inside `{% if unit is defined %}` may serve a reply without unit."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      - reply: education\n        unit: agent_desk\n", "      - reply: education\n")
    for lang, before in (("id", "kepada "), ("en", "the ")):
        tpl = config_copy.parent / "templates" / f"education.{lang}.txt"
        text = tpl.read_text()
        text = text.replace(" [{{ unit.name }}]", "{% if unit is defined %} [{{ unit.name }}]{% endif %}")
        guarded = "{% if unit is defined %}{{ unit.name }}{% else %}our team{% endif %}"
        text = text.replace(before + "{{ unit.name }}", before + guarded)
        text = text.replace(
            "{{ unit.next_steps }}", "{% if unit is defined %}{{ unit.next_steps }}{% else %}-{% endif %}"
        )
        tpl.write_text(text)
    config = load_config(config_copy)
    mail = eml(
        "From: NOC <noc@it.pertamina.co.id>",
        "Subject: Mohon info harga paket",
        body="Mohon informasi harga paket internet dedicated 100 Mbps.",
    )
    routing = route(mail, config, NOW)
    assert routing.decision.rule == "1.2.6-information-to-agent-desk", routing.decision
    (reply,) = [o for o in routing.outgoing if isinstance(o.action, Reply)]
    assert reply.action.unit is None
    body = reply.message.get_content()
    assert "diteruskan kepada our team" in body and "diteruskan kepada ," not in body
    assert not routing.failed


def test_a_reply_without_unit_that_slips_through_fails_instead_of_sending_an_empty_unit(config: Config) -> None:
    """At run time an unguarded unit in a reply without unit is a render failure, never "diteruskan kepada , …"."""
    from dataclasses import replace

    from emailrouter.core.decide import Table

    rows = tuple(
        replace(row, actions=tuple(Reply(a.template) if isinstance(a, Reply) else a for a in row.actions))
        for row in config.table.rows
    )
    unitless = replace(config, table=Table(config.table.hit_policy, rows, config.table.file))
    mail = eml("From: budi@gmail.com", "Subject: internet mati", body="Internet saya mati sejak pagi.")
    routing = route(mail, unitless, NOW)
    assert [o.action.type for o in routing.outgoing] == ["forward"]
    (failure,) = routing.failed
    assert failure.template == "education" and failure.language == "id"
    assert failure.reason.endswith(NO_UNIT)


def test_shipped_templates_pass_check(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped config passes the stricter check (every template, every sample)."""
    assert main(["check", "-c", str(Path(__file__).parent.parent / "config" / "emailrouter.yaml")]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("display", "greeted"),
    [("🌸 Sari ✨", "Sari"), ("Budi 👍🏽 Santoso", "Budi Santoso"), ("❤️", ""), ("王小明", "王小明"), ("", "")],
)
def test_a_reply_greets_by_name_without_the_emoji_of_the_display_name(
    config: Config, display: str, greeted: str
) -> None:
    """`customer.name` keeps the letters of a display name and leaves out emoji and symbols."""
    assert greeting_name(display) == greeted
    raw = eml(
        f"From: {formataddr((display, 'budi.santoso@gmail.com'))}",
        "To: cs@cc.example.co.id",
        "Subject: internet mati",
        "Message-ID: <greet-1@gmail.com>",
        body="internet di rumah mati total sejak pagi, tolong dicek",
    )
    replies = [o for o in route(raw, config, NOW).outgoing if isinstance(o.action, Reply)]
    assert replies, "the shipped table answers this mail"
    body = replies[0].message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "✨" not in text and "🌸" not in text and "👍" not in text
    if greeted:
        assert greeted in text


def test_the_readme_lists_exactly_the_template_variables() -> None:
    """The README's table of template variables names every variable a reply template gets, and no other."""
    unit = Unit("u", "u@x.example", {"id": "U", "en": "U"}, {"id": "n", "en": "n"})
    context = reply_context(
        router=RouterIdentity("r@x.example", "R", "ER"),
        language="en",
        customer_name="B",
        customer_address="b@x.example",
        original_subject="s",
        unit=unit,
        reference="ER-1",
        segment="DCS",
    )
    names = {f"{k}.{sub}" for k, v in context.items() if isinstance(v, dict) for sub in v}
    names |= {k for k, v in context.items() if not isinstance(v, dict)}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("<!-- template variables") :].split("\n\n")[0]
    documented = set(
        re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", "\n".join(line.split("|")[1] for line in table.splitlines()[3:]))
    )
    assert documented == names
