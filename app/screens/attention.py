"""Page file: the layout lives in app.views.attention."""
from app.views import attention

attention.render()
