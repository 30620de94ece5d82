from ledgermq.cli.main import main

raise SystemExit(main())
