/* The JSON type of a cJSON value in words, for error messages ("expected a number, got a
 * string"): "missing" for NULL. Shared by the config.json and safetensors header readers. */
#ifndef MB_IO_JSON_TYPE_H
#define MB_IO_JSON_TYPE_H

#include <cjson/cJSON.h>

static inline const char *mb_json_type(const cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

#endif
