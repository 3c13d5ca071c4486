"""Page file: the layout lives in app.views.compare."""
from app.views import compare

compare.render()
