"""uipd source plugin ``ngsi-ld``: entities of an NGSI-LD context broker, polled or pushed."""
