from netslim.cli.main import main

raise SystemExit(main())
