"""The Solara app of the Mesa reference model's browser view (see :mod:`nksim.mesa_ref.viz`).

solara run nksim.mesa_ref.app        # or: python -m nksim.mesa_ref.viz
"""
from nksim.mesa_ref.viz import make_page

#: The page Solara serves.
page = make_page()
