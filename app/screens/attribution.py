"""Page file: the layout lives in app.views.attribution."""
from app.views import attribution

attribution.render()
