"""The domain model and its persistence: imported by every process, importing none of them."""
