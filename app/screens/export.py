"""Page file: the layout lives in app.views.export."""
from app.views import export

export.render()
