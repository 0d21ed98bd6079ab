"""What both controllers (the GreenTrainingJob operator and the Kueue check) run on: a delaying,
de-duplicating work queue and leader election through a Lease. No greenjobs policy in here."""
