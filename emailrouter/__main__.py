from emailrouter.cli import main

raise SystemExit(main())
