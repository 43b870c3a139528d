"""Money and query accounting for vendor queries (knows prices, nothing of images)."""
