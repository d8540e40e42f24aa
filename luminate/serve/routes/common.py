"""What every route takes: the app's :class:`~luminate.serve.toolbox.Toolbox`, as a FastAPI dependency."""

from __future__ import annotations

from fastapi import Depends, Request

from luminate.serve.toolbox import Toolbox


def _toolbox(request: Request) -> Toolbox:
    return request.app.state.toolbox


#: ``box: Toolbox = ToolboxDep`` in a route's parameters gives the app's toolbox.
ToolboxDep = Depends(_toolbox)
