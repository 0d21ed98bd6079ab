"""Energy and footprint accounting: GPU energy from the agents, host energy, CO2e and budgets."""
