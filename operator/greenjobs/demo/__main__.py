from greenjobs.demo.run import main

raise SystemExit(main())
