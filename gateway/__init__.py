"""The HTTP gateway: synchronous claim submission (``/api/v1``), the outcome view (a
consumer of the decision topics into SQLite) and the investigators' page (``/``).

``gateway.app.create_app(settings)`` builds the Flask application; ``claimflow gateway``
serves it with granian. Nothing is imported here, so ``import gateway`` stays cheap.
"""
