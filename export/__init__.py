"""SavedModel export for TF Serving, and a gRPC client."""
