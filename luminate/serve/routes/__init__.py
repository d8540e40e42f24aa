"""The toolbox's routes, one APIRouter per topic; :func:`luminate.serve.app.create_app` includes every router of
:data:`ROUTERS` in order. A new topic is a module with a ``router`` and one line here."""

from __future__ import annotations

from luminate.serve import circuits
from luminate.serve.routes import images, layers, page, units

#: Every router the app serves, in the order they are included.
ROUTERS = (page.router, images.router, layers.router, units.router, circuits.router)

__all__ = ["ROUTERS"]
