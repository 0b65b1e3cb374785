"""Tools beside the relay, outside its runtime: the PagerDuty simulator."""
