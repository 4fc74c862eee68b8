"""The descriptor pool of tidal's generated protocol modules (see `tidal._protogen`)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
