"""Model adapters. Each is imported on demand so the core never imports a framework."""
