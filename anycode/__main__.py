from anycode.cli import main

raise SystemExit(main())
