from podnet.cli.main import main

raise SystemExit(main())
