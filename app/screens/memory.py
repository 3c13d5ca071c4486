"""Page file: the layout lives in app.views.memory."""
from app.views import memory

memory.render()
