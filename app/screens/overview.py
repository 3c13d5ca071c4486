"""Page file: the layout lives in app.views.overview."""
from app.views import overview

overview.render()
