package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Config is what the CLI and other clients need to reach a cluster. It is
// stored as YAML in ~/.config/skiff/config, or wherever $SKIFF_CONFIG says.
type Config struct {
	// Servers are tried in order until one answers.
	Servers []string `yaml:"servers"`
	Token   string   `yaml:"token"`
	// CA is the cluster CA certificate (PEM) that server certificates must
	// chain to.
	CA string `yaml:"ca"`
}

// DefaultConfigPath is $SKIFF_CONFIG, else ~/.config/skiff/config.
func DefaultConfigPath() string {
	if p := os.Getenv("SKIFF_CONFIG"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".config", "skiff", "config")
}

// LoadConfig reads a config file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("no skiff config at %s: run `skiff up` on this machine, or set SKIFF_CONFIG", path)
	}
	if err != nil {
		return Config{}, err
	}
	var c Config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %v", path, err)
	}
	if len(c.Servers) == 0 || c.Token == "" || c.CA == "" {
		return Config{}, fmt.Errorf("%s: needs servers, token and ca", path)
	}
	return c, nil
}

// Save writes the config with owner-only permissions, atomically.
func (c Config) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append([]byte("# skiff client config\n"), b...), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
