"""Page file: the layout lives in app.views.timeline."""
from app.views import timeline

timeline.render()
