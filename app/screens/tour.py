"""Page file: the layout lives in app.views.tour."""
from app.views import tour

tour.render()
