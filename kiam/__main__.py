from kiam.cli import main

raise SystemExit(main())
