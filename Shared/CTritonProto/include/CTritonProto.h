#include "grpc_service.pb-c.h"
