"""The ``/v1`` resources, one ``APIRouter`` per family, each in its own module with its dependencies
(``api.state``: ``Api`` for the app's state, ``Who`` for the caller). ``api.app.create_app`` includes
them; a new family is a module here and one ``include_router`` line there."""
