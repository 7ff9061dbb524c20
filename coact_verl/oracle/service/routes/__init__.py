"""HTTP routes of the oracle service, one module per resource (the running core is ``app.state.core``)."""
