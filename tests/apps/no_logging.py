"""A service that configures no logging at all, on a database that may be down.

``DATABASE_URL``: the SQLAlchemy (async) URL. lifesigns' own options come from
``LIFESIGNS_*``. Nothing here touches :mod:`logging`: what reaches stderr is what
lifesigns sets up by itself.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from lifesigns import Lifesigns

engine = create_async_engine(os.environ["DATABASE_URL"])

signs = Lifesigns(service="quiet")
signs.watch_engine(engine)

app = FastAPI()
signs.install(app)
