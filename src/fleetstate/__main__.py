from fleetstate.cli import main

raise SystemExit(main())
