"""Names people give things: free text, but it must show something.

As a msgspec constraint, the rule is enforced where bodies are decoded and stated in the OpenAPI
document by the same annotation.
"""

from typing import Annotated

import msgspec

Name = Annotated[
    str, msgspec.Meta(pattern=r"\S", description="at least one character that is not a space")
]
