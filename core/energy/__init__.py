"""What training costs the volunteer in energy, and the governor that keeps it within their limits."""
