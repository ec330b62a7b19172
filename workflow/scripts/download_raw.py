"""Fetch one raw dataset file (or archive) from its pinned public URL, checked against its sha256.

Input:  none; or (member of an archive) the downloaded archive.
Output: resources/raw/<task>/<file> (the names raw_data.downloads lists; read by build_real_data),
        or resources/raw/<archive> (temporary).
Feeds:  build_real_data when raw_data.local_dir is null.
"""

from synthctx.data.download import extract_member, fetch_verified
from synthctx.logging_utils import setup_logging

log = setup_logging(snakemake.log[0])  # noqa: F821 - injected by Snakemake
entry = snakemake.params.entry  # noqa: F821 - url, sha256 and its config key, or an archive member
if entry["member"]:
    extract_member(snakemake.input.archive, entry["member"], snakemake.output[0])  # noqa: F821
else:
    fetch_verified(entry["url"], snakemake.output[0], entry["sha256"], verify=snakemake.params.verify,  # noqa: F821
                   key=entry["key"])
