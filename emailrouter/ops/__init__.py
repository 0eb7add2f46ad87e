"""What ops run by hand: the command line, rule tests, replay, stats, evaluate and train."""
