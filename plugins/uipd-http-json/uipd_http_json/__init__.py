"""uipd source plugin ``http-json``: polls a JSON URL and publishes the entities it selects."""
