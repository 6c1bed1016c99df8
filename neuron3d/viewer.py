"""Neuroglancer viewer for EM, ground truth and reconstructions (neuroglancer 2.x).

Volumes are numpy (z, y, x) arrays served from memory with ``LocalVolume``, or zarr
stores.  A zarr store is served as it lies on disk: its folder over HTTP (mounted on the
viewer's own server and port), opened by the Neuroglancer client as a ``zarr://`` source,
which reads the store's OME-Zarr multiscale pyramid and fetches the level the zoom needs
(a zoomed-out view of a large volume reads its coarse levels, not level 0).  A zarr label
layer whose segments are chosen (``segments``), and a store of a dtype the client does not
read, are served chunk by chunk through ``LocalVolume`` instead (level 0 only; the Python
server meshes the chosen segments).  Nothing is read whole.
The display axes are x, y, z in nanometres, at the voxel size given: a store's metadata
is served restated at it, so that every layer lines up.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import numpy as np

from .io import as_label_stack, write_file

__all__ = [
    "BROWSERS", "INSTALL_HINT", "MAX_ID", "LazySegmentation", "build_viewer",
    "check_max_segments", "check_port", "check_screenshot", "check_segments", "check_shapes",
    "check_voxel_size", "find_browser", "is_lazy", "largest_segments", "screenshot",
    "segmentation_dtype", "multiscales_at", "start_server", "stored_source",
]

#: Browsers and drivers looked for by :func:`find_browser`.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: 3D panel orientation (quaternion x, y, z, w): tilted so that neurites show their z extent.
VIEW_3D = [0.35, -0.25, -0.1, 0.9]
INSTALL_HINT = ("install Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver)")
#: Largest segment ID Neuroglancer holds (uint64).
MAX_ID = int(np.iinfo(np.uint64).max)
#: The dtypes the Neuroglancer client decodes from a zarr store itself.
CLIENT_DTYPES = frozenset(np.dtype(t) for t in (
    np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.float32))
_MOUNTED = {}  # (the Neuroglancer server, a store's folder, voxel size) -> its URL path


def segmentation_dtype(labels, source="labels"):
    """Labels as uint32 (or uint64 when needed), as Neuroglancer segmentation expects."""
    labels = as_label_stack(labels, source)
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint32 if top <= np.iinfo(np.uint32).max else np.uint64, copy=False)


class LazySegmentation:
    """A zarr label array seen as uint32 (or uint64) chunk by chunk, for ``LocalVolume``."""

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.dtype = np.dtype(np.uint64 if np.dtype(array.dtype).itemsize == 8 else np.uint32)

    def __getitem__(self, item):
        return np.asarray(self.array[item]).astype(self.dtype, copy=False)


def multiscales_at(metadata, voxel_size):
    """OME-Zarr group metadata (``.zattrs`` of NGFF 0.4, or the attributes of a 0.5
    ``zarr.json``) with every level's scale and translation restated for a level-0 voxel
    of ``voxel_size`` (z, y, x) nm, the spatial axes in nanometres; None when it holds no
    multiscales of three spatial axes z, y, x (first).

    The viewer serves a store's metadata so restated, so that a store written without a
    voxel size, or with another, lines up with the viewer's other layers, pyramid and all.
    """
    holder = metadata.get("ome", metadata) if isinstance(metadata, dict) else None
    try:
        multiscale = holder["multiscales"][0]
        axes = multiscale["axes"]
        names = [a["name"] if isinstance(a, dict) else a for a in axes]
        if names[:3] != ["z", "y", "x"]:
            return None
        bases = None
        for dataset in multiscale["datasets"]:
            transforms = dataset["coordinateTransformations"]
            scale = next(t for t in transforms if t["type"] == "scale")["scale"]
            bases = bases or [float(v) for v in scale[:3]]
            for t in transforms:
                key = t["type"]
                if key in ("scale", "translation"):
                    t[key] = [float(v) / b * n for v, b, n in
                              zip(t[key][:3], bases, voxel_size)] + list(t[key][3:])
    except (KeyError, IndexError, TypeError, ValueError, StopIteration, ZeroDivisionError):
        return None
    for axis in axes[:3]:
        if isinstance(axis, dict):
            axis["unit"] = "nanometer"
    multiscale.pop("coordinateTransformations", None)  # a global scale would apply twice
    return metadata


def _store_handler():
    """A handler serving a zarr store's files (neuroglancer's CORS static-file handler) with
    its OME-Zarr metadata restated at the viewer's voxel size (:func:`multiscales_at`)."""
    import json

    from neuroglancer.static_file_server import CorsStaticFileHandler

    class StoreHandler(CorsStaticFileHandler):
        def initialize(self, path, voxel_size, default_filename=None):
            super().initialize(path, default_filename)
            self.voxel_size = voxel_size

        def get(self, path, include_body=True):
            if path not in (".zattrs", "zarr.json"):
                return super().get(path, include_body)
            try:
                metadata = json.loads((Path(self.root) / path).read_text())
            except (OSError, ValueError):
                return super().get(path, include_body)  # a 404, or what the file holds
            node = metadata.get("attributes", metadata) if path == "zarr.json" else metadata
            multiscales_at(node, self.voxel_size)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(metadata))
            return None

        def compute_etag(self):  # restated metadata is not the file on disk
            return super().compute_etag() if getattr(self, "absolute_path", None) else None

    return StoreHandler


def stored_source(volume, voxel_size=(6, 6, 30)):
    """The ``zarr://`` URL at which the Neuroglancer client reads the OME-Zarr store that
    holds ``volume`` (all its pyramid levels) at ``voxel_size`` (x, y, z nm), or None when
    it cannot: ``volume`` is not the first level of an OME-Zarr multiscale group, or its
    dtype is not one the client decodes (:data:`CLIENT_DTYPES`).

    The store's folder is mounted once per process and voxel size on the running
    Neuroglancer server (started here if it is not), under an unguessable path: one address
    and port for everything, so an SSH forward of the viewer's port carries the stores too.
    Its multiscales metadata is served restated at ``voxel_size``
    (:func:`multiscales_at`); the chunks as they are on disk."""
    try:
        import zarr
    except ImportError:
        return None
    if not isinstance(volume, zarr.Array) or np.dtype(volume.dtype) not in CLIENT_DTYPES:
        return None
    import concurrent.futures
    import copy

    import neuroglancer.server
    from neuroglancer.random_token import make_random_token

    from .zarrio import store_path

    folder = Path(store_path(volume)).resolve()
    zyx = tuple(float(v) for v in voxel_size)[::-1]
    try:  # zarr reads a v2 group's .zattrs and a v3 group's zarr.json alike
        meta = dict(zarr.open_group(store=str(folder), mode="r").attrs)
    except Exception:  # a bare array, or a folder zarr cannot open as a group
        return None
    if multiscales_at(copy.deepcopy(meta), zyx) is None:
        return None
    first = meta.get("ome", meta)["multiscales"][0]["datasets"][0].get("path")
    if first != volume.path:  # the viewer was given another level than the first
        return None
    neuroglancer.server.start()
    server = neuroglancer.server.global_server
    key = (id(server), str(folder), zyx)
    if key not in _MOUNTED:
        path = f"/neuron3d/zarr/{make_random_token()}/"
        added = concurrent.futures.Future()

        def mount():  # on the server's event loop: tornado is not thread-safe
            try:
                server.app.add_handlers(r".*$", [(rf"^{path}(.*)$", _store_handler(),
                                                  {"path": str(folder), "voxel_size": zyx})])
                added.set_result(None)
            except Exception as exc:  # raised below, in the caller's thread
                added.set_exception(exc)

        server.loop.call_soon_threadsafe(mount)
        added.result(timeout=60)
        _MOUNTED[key] = path
    return f"zarr://{neuroglancer.server.get_server_url()}{_MOUNTED[key]}"


def is_lazy(volume):
    """Whether ``volume`` is read on demand (a zarr array or a :class:`LazySegmentation`)."""
    return volume is not None and not isinstance(volume, np.ndarray)


def largest_segments(labels, count):
    """The ``count`` IDs (> 0) with the most voxels, largest first."""
    import fastremap

    ids, sizes = fastremap.unique(labels, return_counts=True)
    keep = ids > 0
    ids, sizes = ids[keep], sizes[keep]
    order = np.argsort(-sizes, kind="stable")[:count]
    return [int(i) for i in ids[order]]


def check_shapes(volumes, sources=None):
    """All (name, array) pairs must share a (z, y, x) shape with at least one voxel.

    Parameters
    ----------
    volumes : dict
        ``{name: array}``, e.g. ``{"em": ..., "label": ...}``.
    sources : dict, optional
        ``{name: file}`` where each came from, named in messages.

    Raises
    ------
    ValueError
        Naming the volumes (and files) whose shapes differ, that are not 3-D or are empty.
    """
    sources = sources or {}

    def origin(name):
        return f" from {sources[name]}" if sources.get(name) else ""

    for name, volume in volumes.items():
        if volume.ndim != 3:
            raise ValueError(f"{name} must be a 3-D (z, y, x) stack, got shape "
                             f"{volume.shape}{origin(name)}")
        if volume.size == 0:
            raise ValueError(f"{name} is empty, shape {volume.shape}{origin(name)}")
    shapes = {name: tuple(v.shape[:3]) for name, v in volumes.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}{origin(name)}" for name, shape in shapes.items())
        raise ValueError(f"input shapes differ: {listed}")


def check_segments(segments, name="segments"):
    """Segment IDs as a list of ints in 0..2**64-1 (Neuroglancer's uint64), or None.

    Raises
    ------
    ValueError
        For an ID that is not a whole number in that range; the message names
        ``name`` and the ID.
    """
    if segments is None:
        return None
    ids = []
    for value in segments:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not 0 <= int(value) <= MAX_ID:
            raise ValueError(f"{name}: segment ID {value!r} is not a whole number in "
                             f"0..{MAX_ID} (uint64)")
        ids.append(int(value))
    return ids


def check_max_segments(max_segments, name="max_segments"):
    """Return ``max_segments`` if it is a whole number >= 1; raise ValueError naming ``name``."""
    if isinstance(max_segments, bool) or not isinstance(max_segments, (int, np.integer)) \
            or max_segments < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {max_segments!r}")
    return int(max_segments)


def check_voxel_size(voxel_size, name="voxel_size"):
    """(x, y, z) voxel size in nm as three positive finite floats.

    Raises
    ------
    ValueError
        Naming ``name`` and the values.
    """
    values = tuple(float(v) for v in voxel_size)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be three positive sizes in nm (x y z), got "
                         f"{' '.join(f'{v:g}' for v in values)}")
    return values


def check_screenshot(path, size, path_name="screenshot", size_name="size"):
    """Check a screenshot's file name and (width, height) before anything is rendered.

    Returns
    -------
    tuple of int
        ``(width, height)``.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.png`` or is a folder, or a size
        is not a whole number in 1..16384; messages name ``path_name`` / ``size_name``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path_name} must name a .png file, got {path}")
    if path.is_dir():
        raise ValueError(f"{path_name} is an existing folder, expected a .png file: {path}")
    values = tuple(size)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               or not 1 <= v <= 16384 for v in values):
        raise ValueError(f"{size_name} must be two whole numbers (width height) in 1..16384 "
                         f"pixels, got {' '.join(map(str, values))}")
    return tuple(int(v) for v in values)


def check_port(port, name="port"):
    """Return ``port`` if it is 0 (any free port) .. 65535; raise ValueError naming ``name``."""
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)) \
            or not 0 <= port <= 65535:
        raise ValueError(f"{name} must be 0..65535 (0: a free port), got {port!r}")
    return int(port)


def build_viewer(em=None, label=None, predicted=None, voxel_size=(6, 6, 30), segments=None,
                 max_segments=200, sources=None):
    """A neuroglancer.Viewer showing the given volumes.

    Parameters
    ----------
    em : numpy.ndarray, optional
        (z, y, x) uint8 EM, an image layer.
    label, predicted : numpy.ndarray, optional
        (z, y, x) integer IDs, segmentation layers with meshes in the 3D panel.
    voxel_size : tuple of float
        (x, y, z) in nm; SNEMI3D's is 6 x 6 x 30.
    segments : list of int, optional
        IDs to show (each in 0..2**64-1); default all, or the ``max_segments``
        largest when there are more.
    max_segments : int
        At least 1.  Zarr arrays (read on demand) have no default selection: finding the
        largest segments, or meshing one, reads the whole volume; the 3D panel shows the
        cross-sections then, and ``segments`` selects objects to mesh.
    sources : dict, optional
        ``{"em": file, "label": file, "predicted": file}``, named in error messages.

    Returns
    -------
    neuroglancer.Viewer

    Raises
    ------
    ValueError
        If no volume is given, the shapes differ or are empty, or an option is invalid.
    """
    import neuroglancer

    volumes = {k: v for k, v in (("em", em), ("label", label), ("predicted", predicted))
               if v is not None}
    if not volumes:
        raise ValueError("no layer given: pass at least one of --em, --label, --predicted")
    volumes = {k: v if is_lazy(v) else np.asarray(v) for k, v in volumes.items()}
    check_shapes(volumes, sources)
    lazy = any(is_lazy(v) for v in volumes.values())
    vx, vy, vz = check_voxel_size(voxel_size)
    segments = check_segments(segments)
    max_segments = check_max_segments(max_segments)
    data_space = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="nm",
                                              scales=[vz, vy, vx])
    depth, height, width = next(iter(volumes.values())).shape
    viewer = neuroglancer.Viewer()
    with viewer.txn() as s:
        s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm",
                                                    scales=[vx, vy, vz])
        if em is not None:
            s.layers["em"] = neuroglancer.ImageLayer(source=stored_source(
                volumes["em"], (vx, vy, vz)) or neuroglancer.LocalVolume(
                data=volumes["em"], dimensions=data_space, volume_type="image"))
        for name in ("label", "predicted"):
            if name not in volumes:
                continue
            source = None
            if is_lazy(volumes[name]):
                shown = segments or []
                if not segments:  # chosen segments are meshed from LocalVolume
                    source = stored_source(volumes[name], (vx, vy, vz))
                ids = LazySegmentation(volumes[name])
            else:
                ids = segmentation_dtype(volumes[name], (sources or {}).get(name) or name)
                shown = segments
                if shown is None:
                    shown = largest_segments(ids, max_segments)
            s.layers[name] = neuroglancer.SegmentationLayer(
                source=source or neuroglancer.LocalVolume(data=ids, dimensions=data_space,
                                                          volume_type="segmentation"),
                segments=shown)
        s.layout = "xy-3d"
        s.position = [width / 2, height / 2, depth / 2]
        s.cross_section_scale = max(width, height) / 400
        s.projection_scale = max(width, height * vy / vx, depth * vz / vx) * 2.2
        # meshes, not cross-section planes, in the 3D panel (zarr: planes, see above)
        s.show_slices = lazy and not segments
        s.projection_orientation = VIEW_3D
    return viewer


def start_server(bind_address="127.0.0.1", port=0, static_content_url=None, port_name="port"):
    """Configure Neuroglancer's web server.

    Raises
    ------
    ValueError
        If ``port`` is outside 0..65535 (the message names ``port_name``) or the
        address and port cannot be bound (e.g. the port is in use).
    """
    import neuroglancer

    port = check_port(port, port_name)
    if port:
        with socket.socket(socket.AF_INET6 if ":" in bind_address else socket.AF_INET) as probe:
            try:
                probe.bind((bind_address, port))
            except OSError as exc:
                raise ValueError(f"cannot serve on {bind_address}:{port}: {exc.strerror}") from None
    neuroglancer.set_server_bind_address(bind_address, port)
    if static_content_url:
        neuroglancer.set_static_content_source(url=static_content_url)


def find_browser():
    """(chromium binary, chromedriver) paths; raises RuntimeError with what to install."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = "a Chromium browser" if browser is None else "chromedriver"
        raise RuntimeError(f"--screenshot needs a headless browser, {missing} not found: "
                           f"{INSTALL_HINT}")
    return browser, driver


def screenshot(viewer, path, size=(1200, 800), timeout=180.0):
    """Render ``viewer`` in headless Chromium once its data are drawn and save a PNG.

    Raises
    ------
    RuntimeError
        If no browser is installed or the rendering does not finish within ``timeout`` s.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic",
                f"--window-size={size[0] + 100},{size[1] + 200}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(viewer.get_viewer_url())
        result = {}

        def capture():
            try:
                result["reply"] = viewer.screenshot(size=list(size))
            except Exception as exc:  # reported below
                result["error"] = exc

        worker = threading.Thread(target=capture, daemon=True)
        worker.start()
        worker.join(timeout)
        if "reply" not in result:
            raise RuntimeError(f"the viewer did not finish rendering within {timeout:.0f} s"
                               + (f": {result['error']}" if "error" in result else ""))
        png = result["reply"].screenshot.image
    finally:
        driver.quit()
    return write_file(path, png)
