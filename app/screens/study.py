"""Page file: the layout lives in app.views.study."""
from app.views import study

study.render()
