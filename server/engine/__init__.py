"""Engines behind one narrow async interface (`EngineClient`), their pool and their supervisor."""
