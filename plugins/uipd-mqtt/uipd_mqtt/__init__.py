"""uipd source plugin ``mqtt``: JSON payloads of MQTT topics published as uipd entities."""
