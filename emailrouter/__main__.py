from emailrouter.ops.cli import main

raise SystemExit(main())
