"""Planning: when and where each job runs, alone or as a fleet, under capacity. Pure: no I/O."""
