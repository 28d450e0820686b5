from labrunner.cli import main

raise SystemExit(main())
