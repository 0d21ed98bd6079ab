"""The GreenTrainingJob API: constants, models of spec and status, and the CRD generated from them."""
