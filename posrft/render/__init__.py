"""DrAction: differentiable Gaussian-splatting renderer of skeleton sequences (floor 2).

``DrAction(fmt)(joints)`` renders ``(B, T, J, 3)`` / ``(B, P, T, J, 3)`` skeleton clips of any
format into ``(B, T', 3, H, W)`` frames; :class:`Camera` projects points for other code;
:mod:`posrft.render.pictures` writes PNG grids, GIFs and labelled pose grids.
"""

from posrft.render.camera import Camera, auto_frame
from posrft.render.draction import DrAction, RenderResult, render_skeleton
from posrft.render.ewa import RasterRules, project_gaussians
from posrft.render.pictures import (
    frame_grid,
    render_clip_to_file,
    render_npy,
    render_pose_grid,
    to_pil,
)
from posrft.render.raster import rasterize, rasterize_dense
from posrft.render.raster_fast import rasterize_fast

__all__ = [
    "Camera",
    "DrAction",
    "RasterRules",
    "RenderResult",
    "auto_frame",
    "frame_grid",
    "project_gaussians",
    "rasterize",
    "rasterize_dense",
    "rasterize_fast",
    "render_clip_to_file",
    "render_npy",
    "render_pose_grid",
    "render_skeleton",
    "to_pil",
]
