"""Page file: the layout lives in app.views.papers."""
from app.views import papers

papers.render()
