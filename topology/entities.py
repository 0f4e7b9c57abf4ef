"""Who the features describe."""

from streamfs.definitions import Entity

user = Entity(
    name="user",
    join_keys=("user_id",),
    key_type="string",
    description="A shop customer, e.g. u000042.",
)
