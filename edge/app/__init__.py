"""The composition root: wires the ground floor (edge), collectors, analytics and the API into
the service, the `edge` CLI and the demo. It imports everything; nothing below imports it."""
