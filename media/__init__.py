"""Images: validated by content, stripped of private metadata, stored by content.

The command service receives uploads (UploadImage) and checks the media ids of
CreatePost; the query service streams stored renditions (GetImage). Layers, each
using only the ones above it:

- `pipeline`: decode, validate and re-encode an image into its renditions (pure).
- `upload`: read an UploadImage stream into a spool, within the size cap.
- `store`: the MediaStore protocol, its records, and LocalMediaStore (files on disk).
- `library`: MediaLibrary, which the servicers call; joins the three and maps to and
  from the API's messages.
"""
