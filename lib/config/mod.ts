/**
 * Config files: TOML keyed by flag names, validated by a schema derived from the flags.
 * @module
 */

export {
  ConfigError,
  type ConfigErrorReason,
  type ConfigFlag,
  configSchema,
  type ConfigValue,
  keyLine,
  loadConfigFile,
  parseConfig,
} from "./load.ts";
