"""Chat network adapters; each module translates one network's wire format."""
