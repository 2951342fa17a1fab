import Foundation
FileHandle.standardError.write(Data("feature-pipeline: not implemented yet\n".utf8))
exit(2)
