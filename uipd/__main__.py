from uipd.cli import main

raise SystemExit(main())
